//! One Redis handle for one Redis server or a Redis Cluster, so the runtime above it is written
//! once. Both variants multiplex commands over shared connections and reconnect by themselves;
//! the cluster variant routes each command (and each script, by its first key) to the master
//! owning the slot, which is why every command and script is given keys that share a hash slot
//! (see redis_keys.rs). Commands that no key routes (SCAN) go to every master explicitly.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Value};

/// A multiplexed connection to one Redis or to a Redis Cluster; cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// One Redis server (or a primary behind a failover-aware address).
    Single(ConnectionManager),
    /// A Redis Cluster, reached through its seed nodes.
    Cluster(ClusterHandle),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_cluster() { "RedisConn::Cluster" } else { "RedisConn::Single" })
    }
}

/// A cluster connection made on first use, so a member starts while the cluster is down (as
/// it does with one Redis) and its readiness probe says so.
#[derive(Clone)]
pub struct ClusterHandle {
    client: ClusterClient,
    conn: Arc<tokio::sync::OnceCell<ClusterConnection>>,
}

impl ClusterHandle {
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.conn.get_or_try_init(|| self.client.get_async_connection()).await.cloned()
    }
}

impl RedisConn {
    /// A handle on `urls`: one URL for one Redis; with `cluster`, one or more seed nodes,
    /// comma-separated. Nothing is connected until the first command. Also returns a client for
    /// dedicated connections (pub/sub), on the first URL: a cluster forwards every published
    /// message to every node, so one node's subscribers hear all of them.
    pub fn open(urls: &str, cluster: bool) -> RedisResult<(RedisConn, redis::Client)> {
        let seeds: Vec<&str> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let first = redis::Client::open(seeds.first().copied().unwrap_or(urls))?;
        if cluster {
            let client = ClusterClient::builder(seeds)
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(5))
                .retries(2)
                // Without it Nagle's algorithm holds small writes back: pickups took 16 ms at
                // the median on the cluster, against 0.4 ms on one Redis.
                .tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true))
                .build()?;
            return Ok((RedisConn::Cluster(ClusterHandle { client, conn: Arc::default() }), first));
        }
        let manager = ConnectionManager::new_lazy_with_config(
            first.clone(),
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5)))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1)),
        )?;
        Ok((RedisConn::Single(manager), first))
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// The live masters' addresses.
    async fn masters(handle: &ClusterHandle) -> RedisResult<Vec<(String, u16)>> {
        let mut conn = handle.connection().await?;
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut conn).await?;
        Ok(nodes
            .lines()
            .filter_map(|line| {
                let mut fields = line.split(' ');
                let addr = fields.nth(1)?;
                let flags = fields.next()?;
                let is_live_master = flags.split(',').any(|f| f == "master") && !flags.contains("fail");
                let (host, port) = addr.split('@').next()?.rsplit_once(':')?;
                let port: u16 = port.parse().ok()?;
                is_live_master.then(|| (host.to_owned(), port))
            })
            .collect())
    }

    /// Clients for dedicated connections (pub/sub) to every master, made from `template`'s
    /// credentials and TLS settings; on one Redis, `template` itself. A message published on
    /// one master reaches subscribers on the others only through the cluster bus, which was
    /// measured here to hold it ~16 ms: subscribing on every master hears each one first-hand.
    pub async fn master_clients(&self, template: &redis::Client) -> RedisResult<Vec<redis::Client>> {
        let RedisConn::Cluster(handle) = self else { return Ok(vec![template.clone()]) };
        let info = template.get_connection_info();
        Self::masters(handle)
            .await?
            .into_iter()
            .map(|(host, port)| {
                let addr = match info.addr() {
                    redis::ConnectionAddr::TcpTls { insecure, tls_params, .. } => {
                        redis::ConnectionAddr::TcpTls { host, port, insecure: *insecure, tls_params: tls_params.clone() }
                    }
                    _ => redis::ConnectionAddr::Tcp(host, port),
                };
                redis::Client::open(info.clone().set_addr(addr))
            })
            .collect()
    }

    /// Every key matching `pattern`, found with SCAN on every master (never KEYS, which
    /// blocks Redis).
    pub async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let mut pages = self.scan_pages(pattern, 1000).await?;
        let mut found = Vec::new();
        while let Some(page) = pages.next_page().await? {
            found.extend(page);
        }
        Ok(found)
    }

    /// The keys matching `pattern`, a SCAN page (about `count` keys looked at) at a time,
    /// master after master: for work done in batches while scanning.
    pub async fn scan_pages(&self, pattern: &str, count: usize) -> RedisResult<ScanPages> {
        let nodes = match self {
            RedisConn::Single(_) => vec![None],
            RedisConn::Cluster(handle) => Self::masters(handle).await?.into_iter().map(Some).collect(),
        };
        Ok(ScanPages { conn: self.clone(), pattern: pattern.to_owned(), count, nodes, cursor: 0 })
    }
}

/// A SCAN in progress over one Redis or every master of a cluster.
pub struct ScanPages {
    conn: RedisConn,
    pattern: String,
    count: usize,
    /// Masters still to scan, the current one last (`None`: the one Redis).
    nodes: Vec<Option<(String, u16)>>,
    cursor: u64,
}

impl ScanPages {
    /// The next page of keys (possibly empty), or `None` once every node is scanned.
    pub async fn next_page(&mut self) -> RedisResult<Option<Vec<String>>> {
        let Some(node) = self.nodes.last().cloned() else { return Ok(None) };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor).arg("MATCH").arg(&self.pattern).arg("COUNT").arg(self.count);
        let reply = match (&self.conn, node) {
            (RedisConn::Cluster(handle), Some((host, port))) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
                handle.connection().await?.route_command(cmd, route).await?
            }
            (conn, _) => cmd.query_async(&mut conn.clone()).await?,
        };
        let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)?;
        self.cursor = next;
        if next == 0 {
            self.nodes.pop();
        }
        Ok(Some(keys))
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(h) => Box::pin(async move { h.connection().await?.req_packed_command(cmd).await }),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(h) => Box::pin(async move {
                let conn = h.connection().await?;
                if pipeline.is_transaction() {
                    // MULTI/EXEC is atomic only within one slot: its keys must share one.
                    return conn.clone().req_packed_commands(pipeline, offset, count).await;
                }
                // A plain pipeline is a batch of independent commands: each goes to the master
                // owning its key, all at once (the cluster client refuses one spanning slots).
                let sent = pipeline.cmd_iter().map(|cmd| {
                    let mut conn = conn.clone();
                    async move { conn.req_packed_command(cmd).await }
                });
                futures::future::try_join_all(sent).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use redis::cluster_routing::Slot;

    use crate::newtypes::TenantId;
    use crate::redis_keys::RedisKeys;

    fn all_one_slot(keys: &[String]) -> bool {
        keys.iter().all(|k| Slot::for_key(k) == Slot::for_key(&keys[0]))
    }

    #[test]
    fn what_one_script_touches_shares_a_slot_and_queues_and_tenants_spread() {
        let keys = RedisKeys::new("ballast", true);
        let queue_keys = |queue: &str| {
            let config = apalis_redis::Config::default().queue(keys.queue(queue));
            vec![
                config.active_jobs_list(),
                config.job_data_hash(),
                config.scheduled_jobs_set(),
                config.workers_set(),
                RedisKeys::queue_inflight(&config.inflight_jobs_set(), "worker-1"),
                config.idempotency_key_set() + ":some-key",
                keys.queue_epoch(queue),
            ]
        };
        let kinds = ["stripe.event", "stripe.refetch", "email.send", "usage.flush", "cache.warm", "noop", "dunning.run", "slo.evaluate"];
        for kind in kinds {
            assert!(all_one_slot(&queue_keys(kind)), "{kind}: a queue's keys share a slot");
        }
        let slots: std::collections::HashSet<Slot> = kinds.iter().map(|k| Slot::for_key(keys.queue(k) + ":active")).collect();
        assert_eq!(slots.len(), kinds.len(), "each kind's queue hashes on its own");

        let tenants: Vec<TenantId> = (0..8).map(|_| TenantId(uuid::Uuid::new_v4())).collect();
        for t in &tenants {
            let usage = vec![keys.usage_dedup(*t, "k"), keys.usage_period(*t, "api_calls", "202612"), keys.usage_warned(*t, "api_calls", "202612")];
            assert!(all_one_slot(&usage), "a tenant's usage keys share a slot");
            let ent = keys.tenant_entitlements(*t);
            assert!(all_one_slot(&[ent.clone(), keys.cache_lock(&ent)]), "a cached value and its load lock share a slot");
        }
        let tenant_slots: std::collections::HashSet<Slot> = tenants.iter().map(|t| Slot::for_key(keys.usage_dedup(*t, "k"))).collect();
        assert!(tenant_slots.len() > 1, "tenants spread over slots");
        for value in [keys.plan_catalogue(), keys.feature_flags()] {
            assert!(all_one_slot(&[value.clone(), keys.cache_lock(&value)]), "{value}: value and lock share a slot");
        }
        let limiter = vec![
            keys.ratelimit_ban("10.0.0.1"),
            keys.ratelimit_ban(""),
            keys.ratelimit_failures("10.0.0.1"),
            keys.ratelimit_blocks(29_000_000),
            keys.ratelimit_window("key", "key:abc"),
            keys.ratelimit_override("tenant_writes", "tenant:abc"),
        ];
        assert!(all_one_slot(&limiter), "one limiter decision touches one slot");
    }

    #[test]
    fn one_redis_keeps_the_names_earlier_builds_wrote() {
        let keys = RedisKeys::new("ballast", false);
        assert_eq!(apalis_redis::Config::default().queue(keys.queue("stripe.event")).active_jobs_list(), "ballast.stripe.event:active");
        assert_eq!(keys.plan_catalogue(), "ballast:plans:v1");
        assert_eq!(keys.ratelimit_window("key", "k1"), "ballast:rl:win:key:k1");
    }

    #[test]
    fn no_script_builds_a_key_it_was_not_given() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut scripts = Vec::new();
        for module in std::fs::read_dir(&root).expect("src") {
            let lua = module.expect("entry").path().join("lua");
            if let Ok(files) = std::fs::read_dir(&lua) {
                scripts.extend(files.map(|f| f.expect("file").path()));
            }
        }
        assert!(scripts.len() >= 10, "found the scripts: {scripts:?}");
        for path in scripts {
            let text = std::fs::read_to_string(&path).expect("read");
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim_start().starts_with("--")) {
                let built = line.contains("KEYS[") && line.contains("..");
                assert!(!built, "{}:{}: a key built inside a script (pass it in KEYS): {line}", path.display(), n + 1);
            }
        }
    }
}
