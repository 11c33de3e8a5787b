//! The test harness: databases, app instances, test job kinds, and queue draining.

pub mod openapi_check;
pub mod browser;
pub mod checked_http;
pub mod db;
pub mod fleet;
pub mod local_dev;
pub mod procs;
pub mod smtp;
pub mod stripe_sim;
pub mod test_jobs;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast::app::{AppState, Member, Role};
use ballast::config::Settings;
use ballast::queue::JobEnvelope;
use ballast::queue::worker::{JobObserver, RunOutcome, WorkerOptions};
use tokio::sync::Notify;

pub use db::TestDb;

/// Run events seen by the worker, so tests wait on facts instead of sleeping.
#[derive(Default)]
pub struct Events {
    pub started: Mutex<Vec<JobEnvelope>>,
    pub finished: Mutex<Vec<(JobEnvelope, RunOutcome)>>,
    pub notify: Notify,
}

impl JobObserver for Events {
    fn started(&self, envelope: &JobEnvelope, _pickup: Duration) {
        self.started.lock().expect("lock").push(envelope.clone());
        self.notify.notify_waiters();
    }
    fn finished(&self, envelope: &JobEnvelope, outcome: RunOutcome, _took: Duration) {
        self.finished.lock().expect("lock").push((envelope.clone(), outcome));
        self.notify.notify_waiters();
    }
}

impl Events {
    /// Waits until `cond` holds (checked on every event), failing after `limit`.
    pub async fn wait_until(&self, what: &str, limit: Duration, cond: impl Fn(&Events) -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if cond(self) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("timed out waiting for: {what}");
            }
        }
    }
}

/// A Ballast instance under test.
pub struct TestApp {
    pub state: AppState,
    pub addr: Option<SocketAddr>,
    /// Where the operator console listens.
    pub console: Option<SocketAddr>,
    pub events: Arc<Events>,
    pub env: HashMap<String, String>,
    pub http: checked_http::CheckedClient,
    member: Option<Member>,
    /// Held for its drop, which removes the test's database.
    _db: TestDb,
    _jobs_dir: tempfile::TempDir,
}

/// How to build a [`TestApp`].
pub struct TestAppBuilder {
    manual_clock: bool,
    limits: Option<String>,
    roles: BTreeSet<Role>,
    extra_env: HashMap<String, String>,
    extra_jobs: Vec<(String, String)>,
    poll: Option<Duration>,
    replica_max_lag_secs: Option<u64>,
}

impl TestAppBuilder {
    /// How often idle workers look for work on their own (the fallback to the wake-up).
    pub fn poll(mut self, every: Duration) -> Self {
        self.poll = Some(every);
        self
    }

    pub fn roles(mut self, roles: &[Role]) -> Self {
        self.roles = roles.iter().copied().collect();
        self
    }

    /// The limiter's and the cache's clock moves only with `app.clock().advance(..)`.
    /// Reads that can lag go to the streaming replica `dev.sh test` starts (this test's
    /// database on it), trusted up to `max_lag_secs` behind.
    pub fn replica(mut self, max_lag_secs: u64) -> Self {
        self.replica_max_lag_secs = Some(max_lag_secs);
        self
    }

    pub fn manual_clock(mut self) -> Self {
        self.manual_clock = true;
        self
    }

    /// Rate-limit policies (TOML) instead of policy/limits.toml.
    pub fn limits(mut self, toml: &str) -> Self {
        self.limits = Some(toml.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.extra_env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sends email to a catcher on loopback at `port` (no TLS).
    pub fn smtp(self, port: u16) -> Self {
        self.env("BALLAST_SMTP_HOST", "127.0.0.1").env("BALLAST_SMTP_PORT", &port.to_string()).env("BALLAST_SMTP_SECURITY", "none")
    }

    /// Replaces or adds a catalogue entry (file name without .toml, TOML text).
    pub fn job_entry(mut self, kind: &str, toml: &str) -> Self {
        self.extra_jobs.push((kind.to_owned(), toml.to_owned()));
        self
    }

    pub async fn spawn(self) -> TestApp {
        init_crypto();
        let db = TestDb::create().await;
        let jobs_dir = tempfile::tempdir().expect("tempdir");
        copy_catalogue(&repo_path("jobs"), jobs_dir.path());
        for (kind, body) in test_jobs::ENTRIES.iter().map(|(k, b)| (k.to_string(), b.to_string())).chain(self.extra_jobs) {
            std::fs::write(jobs_dir.path().join(format!("{kind}.toml")), body).expect("write entry");
        }
        let mut env = db.env();
        env.insert("REDIS_URL".into(), std::env::var("REDIS_URL").expect("REDIS_URL: run tests with deploy/dev.sh test"));
        if let Some(cluster) = redis_cluster() {
            env.insert("BALLAST_REDIS_CLUSTER".into(), cluster.into());
        }
        env.insert("BALLAST_REDIS_NAMESPACE".into(), format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]));
        env.insert("BALLAST_LISTEN".into(), "127.0.0.1:0".into());
        env.insert("BALLAST_CONSOLE_LISTEN".into(), "127.0.0.1:0".into());
        if let Some(lag) = self.replica_max_lag_secs {
            let base = std::env::var("BALLAST_TEST_PG_REPLICA_URL").expect("BALLAST_TEST_PG_REPLICA_URL: run tests with deploy/dev.sh test (it starts the replica)");
            env.insert("BALLAST_REPLICA_DATABASE_URL".into(), format!("{}/{}", base.replace("%ROLE%", "ballast_system"), db.name));
            env.insert("BALLAST_REPLICA_MAX_LAG_SECS".into(), lag.to_string());
        }
        env.insert("BALLAST_JOBS_DIR".into(), jobs_dir.path().display().to_string());
        env.insert("BALLAST_SHUTDOWN_GRACE_SECS".into(), "10".into());
        env.insert("BALLAST_LOG".into(), "warn".into());
        env.insert("STRIPE_WEBHOOK_SECRET".into(), stripe_sim::SECRET.into());
        env.insert("STRIPE_SECRET_KEY".into(), stripe_sim::API_KEY.into());
        // Stripe itself is never called from tests: without a simulator, calls are refused at once.
        env.insert("STRIPE_API_BASE".into(), "http://127.0.0.1:9/".into());
        // The fleet's own health rounds stay out of tests that do not drive them: a test app
        // has no scheduler, and its missing leader would otherwise notify whatever receiver
        // the test counts on (tests/api/fleet_alerts.rs evaluates its rounds itself).
        let alerts = jobs_dir.path().join("alerts.toml.policy");
        let shipped = std::fs::read_to_string(repo_path("deploy/alerts.toml")).expect("deploy/alerts.toml");
        std::fs::write(&alerts, shipped.replace("evaluate_every_secs = 15", "evaluate_every_secs = 86400")).expect("write alerts");
        env.insert("BALLAST_ALERTS_FILE".into(), alerts.display().to_string());
        if let Some(limits) = &self.limits {
            let path = jobs_dir.path().join("limits.toml.policy");
            std::fs::write(&path, limits).expect("write limits");
            env.insert("BALLAST_LIMITS_FILE".into(), path.display().to_string());
        }
        // A test that brings its own Redis (a private server, a closed port) brings one Redis.
        if self.extra_env.contains_key("REDIS_URL") {
            env.insert("BALLAST_REDIS_CLUSTER".into(), "false".into());
        }
        env.extend(self.extra_env);
        let settings = Settings::from_map(env.clone()).expect("test settings");
        let registry = test_jobs::registry();
        let mut state = AppState::build(settings).expect("app state");
        if self.manual_clock {
            let clock = ballast::clock::Clock::manual();
            state.limiter.clock = clock.clone();
            state.cache.clock = clock;
        }
        let events = Arc::new(Events::default());
        let mut options = WorkerOptions::new(registry);
        options.observer = events.clone();
        if let Some(every) = self.poll {
            options.scheduled_poll = every;
        }
        let member = Member::start(state.clone(), &self.roles, options).await.expect("member starts");
        TestApp {
            addr: member.api_addr,
            console: member.console_addr,
            state,
            events,
            env,
            // The intake closes a kept-alive connection idle for its header timeout (10 s); a
            // client pooling it longer can send on a socket being closed (hyper's
            // IncompleteMessage, seen in the permutation test after a long drain).
            http: checked_http::CheckedClient::new(
                reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(5)).build().expect("http client"),
                member.api_addr.map(|a| format!("http://{a}")).unwrap_or_default(),
            )
            .also(member.console_addr.map(|a| format!("http://{a}"))),
            member: Some(member),
            _db: db,
            _jobs_dir: jobs_dir,
        }
    }
}

impl TestApp {
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            manual_clock: false,
            limits: None,
            roles: [Role::Api, Role::Worker].into_iter().collect(),
            extra_env: HashMap::new(),
            extra_jobs: Vec::new(),
            poll: None,
            replica_max_lag_secs: None,
        }
    }

    /// An app with the api and worker roles.
    pub async fn spawn() -> TestApp {
        Self::builder().spawn().await
    }

    /// The limiter's clock (manual with `.manual_clock()`).
    pub fn clock(&self) -> &ballast::clock::Clock {
        &self.state.limiter.clock
    }

    /// Creates a tenant (system role) and returns its id.
    pub async fn tenant(&self, name: &str) -> uuid::Uuid {
        let id = uuid::Uuid::new_v4();
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2)").bind(id).bind(name).execute(&self.state.system_pool.0).await.expect("tenant");
        id
    }

    /// Creates an API key; returns (key id, key).
    pub async fn key(&self, tenant: Option<uuid::Uuid>, scopes: &[ballast::auth::Scope]) -> (uuid::Uuid, String) {
        let created = ballast::auth::store::create(&self.state.system_pool, tenant.map(ballast::newtypes::TenantId), scopes, "test", "test")
            .await
            .expect("create key");
        (created.info.id, created.key)
    }

    /// Calls the API with `key`, a JSON body or none; the status and the JSON answer (null
    /// when the answer is not JSON).
    /// One API request, its answer checked against /openapi.json (see `openapi_check`).
    pub async fn call(&self, method: reqwest::Method, path: &str, key: &str, body: Option<serde_json::Value>) -> (reqwest::StatusCode, serde_json::Value) {
        let mut req = self.http.request(method.clone(), self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        // The client checks the answer against /openapi.json.
        let resp = req.send().await.expect("send");
        let code = resp.status();
        let answer: serde_json::Value = resp.json().await.unwrap_or_default();
        (code, answer)
    }

    /// The URL of `path`: the admin API's on the console's listener, the rest on the intake's.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("/v1/admin") {
            return format!("http://{}{}", self.console.expect("the console's listener (api role)"), path);
        }
        format!("http://{}{}", self.addr.expect("api role"), path)
    }

    /// `path` on the public intake's listener, whatever it is (an admin path is not served there).
    pub fn intake_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr.expect("api role"), path)
    }

    /// Runs queued jobs until no job is ready or running (jobs scheduled for later stay).
    pub async fn drain(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.state.queue.stats().await.expect("queue stats");
            if stats.iter().all(|s| s.ready == 0 && s.running == 0) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "queue did not drain: {stats:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Posts a webhook body with a Stripe-Signature header (or none).
    pub async fn post_webhook(&self, body: Vec<u8>, signature: Option<String>) -> checked_http::CheckedResponse {
        let mut req = self.http.post(self.url("/webhooks/stripe")).header("content-type", "application/json").body(body);
        if let Some(sig) = signature {
            req = req.header("stripe-signature", sig);
        }
        req.send().await.expect("webhook request")
    }

    /// Delivers one event as Stripe would: signed now with the simulator's secret.
    pub async fn deliver(&self, event: &serde_json::Value) -> reqwest::StatusCode {
        let body = serde_json::to_vec(event).expect("event json");
        let sig = stripe_sim::signature_header(stripe_sim::SECRET, chrono::Utc::now().timestamp(), &body);
        self.post_webhook(body, Some(sig)).await.status()
    }

    /// Runs the `ballast` binary with this app's environment.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_with(args, &[])
    }

    /// Runs the `ballast` binary with this app's environment plus `extra`.
    pub fn cli_with(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        self.cli_command(args, extra).output().expect("run ballast")
    }

    /// `ballast ARGS` as a child the runtime keeps serving beside: for a command that calls
    /// this app's own API (a blocking wait would stall the server it waits on).
    pub async fn cli_async(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Output {
        tokio::process::Command::from(self.cli_command(args, extra)).output().await.expect("run ballast")
    }

    fn cli_command(&self, args: &[&str], extra: &[(&str, &str)]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ballast"));
        cmd.args(args).env_clear().envs(&self.env).envs(extra.iter().copied()).env("PATH", std::env::var("PATH").unwrap_or_default());
        cmd
    }

    /// Stops the member the way SIGTERM would.
    pub async fn shutdown(&mut self) {
        if let Some(m) = self.member.take() {
            m.shutdown().await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(m) = self.member.take() {
            // Stop background roles; the runtime is going away with the test anyway.
            drop(m);
        }
        // A fresh connection on a fresh runtime: the test's runtime is blocked in this drop.
        let keys = self.state.keys.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let _ = ballast::perf::bench::delete_namespace(&shared_redis().0, &keys).await;
            });
        })
        .join();
    }
}

/// `BALLAST_REDIS_CLUSTER` as the test run was given it: `deploy/dev.sh test` runs the Redis
/// suites a second time against a local Redis Cluster.
pub fn redis_cluster() -> Option<String> {
    std::env::var("BALLAST_REDIS_CLUSTER").ok().filter(|v| !v.is_empty())
}

/// A fresh handle on the run's Redis (or Redis Cluster), and its key registry's mode.
pub fn shared_redis() -> (ballast::redis_conn::RedisConn, bool) {
    let cluster = redis_cluster().is_some_and(|v| v == "true");
    let url = std::env::var("REDIS_URL").expect("REDIS_URL: run tests with deploy/dev.sh test");
    (ballast::redis_conn::RedisConn::open(&url, cluster).expect("redis url").0, cluster)
}

/// CI's two cores, as the timed drills need them: a drill that compares latencies (under
/// attack, with a slow Stripe) takes it exclusively (`write`); the tests that load the machine
/// (fleets of processes, the permutation property test) share it (`read`), so they run beside
/// each other but never beside a timed drill.
pub static MACHINE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `kind`'s catalogue entry from jobs/ with the settings in `changed` (TOML, such as
/// `concurrency = 1`) put in place of the shipped ones: a test that needs one setting changed
/// keeps every other one as shipped.
pub fn catalogue_entry_with(kind: &str, changed: &str) -> String {
    let shipped = std::fs::read_to_string(repo_path(&format!("jobs/{kind}.toml"))).expect("the catalogue entry");
    let mut entry: toml::Table = shipped.parse().expect("jobs/ entries are TOML");
    for (key, value) in changed.parse::<toml::Table>().expect("the changed settings are TOML") {
        assert!(entry.contains_key(&key), "jobs/{kind}.toml sets no {key}");
        entry.insert(key, value);
    }
    toml::to_string(&entry).expect("a TOML table serialises")
}

fn copy_catalogue(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("jobs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
        }
    }
}
