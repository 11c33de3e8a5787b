//! The drills' harness: `ballast serve` processes of a test app's deployment, private Redis
//! and PostgreSQL servers a drill may kill, and the one `until` and `free_port` every test
//! uses.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Drill workers beat every second, so a dead one's jobs are orphaned after three seconds.
pub const HEARTBEAT_SECS: &str = "1";
/// What a drill promises: a killed worker's job runs again within this long of the death.
pub const RECOVERY_BOUND: Duration = Duration::from_secs(15);

/// A `ballast serve` process of the test app's deployment, logging JSON into a file.
pub struct Proc {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Proc {
    /// Starts a member with `roles` on the real catalogue (jobs/), plus `extra` settings.
    pub fn start(app: &super::TestApp, roles: &str, extra: &[(&str, &str)]) -> Proc {
        Self::start_in(app, roles, super::repo_path("jobs"), extra)
    }

    /// Like [`Proc::start`], with the catalogue read from `jobs_dir`.
    pub fn start_in(app: &super::TestApp, roles: &str, jobs_dir: PathBuf, extra: &[(&str, &str)]) -> Proc {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ballast"))
            .args(["serve", "--roles", roles])
            .env_clear()
            .envs(&app.env)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            // The test app's catalogue has test kinds the binary has no handler for.
            .env("BALLAST_JOBS_DIR", jobs_dir)
            .env("BALLAST_WORKER_HEARTBEAT_SECS", HEARTBEAT_SECS)
            .env("BALLAST_LOG_FORMAT", "json")
            .env("BALLAST_LOG", "info,ballast::queue::worker=debug")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("log handle"))
            .kill_on_drop(true)
            .spawn()
            .expect("ballast serve");
        Proc { child, log }
    }

    /// The exit status, if the process has ended.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    /// Where the process logs.
    pub fn log_path(&self) -> PathBuf {
        self.log.path().to_owned()
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits for the process to end on its own.
    pub async fn exited(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.expect("wait"),
            Err(_) => panic!("the process did not exit within {limit:?}: {}", self.log()),
        }
    }

    /// Sends a signal (TERM, KILL).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill").args([&format!("-{sig}"), &pid]).status().expect("kill");
        assert!(status.success(), "kill -{sig} {pid}");
    }

    /// SIGTERM, then waits for the graceful exit.
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let status = self.exited(Duration::from_secs(30)).await;
        (status, self.log())
    }
}

/// Polls a fact until it holds (checked every 20 ms), failing after `limit`.
pub async fn until<F: std::future::Future<Output = bool>>(what: &str, limit: Duration, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints the members' logs when a drill fails, so a failure in CI says what the fleet did.
pub struct LogsOnPanic(pub Vec<PathBuf>);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for path in &self.0 {
                eprintln!("--- {}:\n{}", path.display(), std::fs::read_to_string(path).unwrap_or_default());
            }
        }
    }
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A Redis server of the drill's own, without persistence: killing it loses everything.
pub struct PrivateRedis {
    child: std::process::Child,
    /// Its port.
    pub port: u16,
}

impl PrivateRedis {
    /// A Redis that keeps nothing across a restart.
    pub async fn start(port: u16) -> PrivateRedis {
        Self::start_with(port, &["--save", "", "--appendonly", "no"].map(String::from)).await
    }

    /// A Redis with the persistence deploy/dev.sh gives it (its `REDIS_PERSISTENCE` line, read
    /// here so the drill tests what is deployed), keeping its files in `dir`.
    pub async fn start_as_deployed(port: u16, dir: &std::path::Path) -> PrivateRedis {
        let script = std::fs::read_to_string(super::repo_path("deploy/dev.sh")).expect("deploy/dev.sh");
        let line = script.lines().find_map(|l| l.strip_prefix("REDIS_PERSISTENCE=(")).expect("dev.sh declares REDIS_PERSISTENCE=(...)");
        let mut args: Vec<String> = line.trim_end_matches(')').split_whitespace().map(|a| a.trim_matches('\'').to_owned()).collect();
        args.extend(["--dir".to_owned(), dir.display().to_string()]);
        Self::start_with(port, &args).await
    }

    async fn start_with(port: u16, persistence: &[String]) -> PrivateRedis {
        // Owned by the struct at once, so a failed start (the panic below) still kills it.
        let redis = PrivateRedis {
            child: std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--logfile", ""])
                .args(persistence)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server (installed by deploy/dev.sh)"),
            port,
        };
        let client = redis::Client::open(redis.url()).expect("url");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING").query_async::<String>(&mut c).await.is_ok()
            {
                return redis;
            }
            assert!(Instant::now() < deadline, "private redis did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: no shutdown save, no goodbye to clients.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL cluster of the drill's own (stopping the shared one would break the tests
/// running beside it), with Ballast's roles and a migrated database.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    bin: PathBuf,
    /// pgBackRest's configuration when the cluster archives its WAL through it.
    archive: Option<PathBuf>,
}

/// The stanza of a cluster that archives its WAL.
pub const STANZA: &str = "ballast";

impl PrivatePostgres {
    /// Runs a PostgreSQL program as the `postgres` user when we are root (it refuses root).
    fn as_pg(&self, program: &str, args: &[&str]) -> std::process::Output {
        let path = self.bin.join(program);
        let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut cmd = if root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            std::process::Command::new(&path)
        };
        let out = cmd.args(args).output().expect(program);
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    pub async fn start() -> PrivatePostgres {
        Self::start_with(false).await
    }

    /// A cluster that archives its WAL through pgBackRest (stanza [`STANZA`], repository and
    /// configuration in its own directory), the stanza created.
    pub async fn start_archiving() -> PrivatePostgres {
        Self::start_with(true).await
    }

    async fn start_with(archiving: bool) -> PrivatePostgres {
        let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL (installed by deploy/dev.sh)");
        let mut versions: Vec<PathBuf> = versions.filter_map(|e| e.ok().map(|e| e.path())).collect();
        versions.sort();
        let bin = versions.pop().expect("a PostgreSQL version").join("bin");
        let dir = tempfile::tempdir().expect("tempdir");
        let (uid, gid) = id_of("postgres");
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown to postgres");
        let port = free_port();
        let archive = archiving.then(|| {
            let d = dir.path().display();
            let conf = dir.path().join("pgbackrest.conf");
            let text = format!(
                "[global]\nrepo1-path={d}/repo\nlock-path={d}/lock\nlog-path={d}\nlog-level-console=warn\nlog-level-file=off\n\
                 start-fast=y\ncompress-type=lz4\nrepo1-retention-full=2\n[{STANZA}]\npg1-path={d}/pg\npg1-port={port}\npg1-socket-path={d}\n"
            );
            std::fs::write(&conf, text).expect("pgbackrest.conf");
            std::os::unix::fs::chown(&conf, Some(uid), Some(gid)).expect("chown pgbackrest.conf");
            conf
        });
        let pg = PrivatePostgres { dir, port, bin, archive };
        let data = pg.data();
        pg.as_pg("initdb", &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"]);
        pg.up();
        if archiving {
            pg.pgbackrest(&["stanza-create"]);
        }
        let url = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port);
        let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("connect");
        let roles = std::fs::read_to_string(super::repo_path("deploy/postgres-roles.sql")).expect("roles");
        sqlx::raw_sql(sqlx::AssertSqlSafe(roles)).execute(&mut admin).await.expect("roles");
        sqlx::raw_sql("CREATE DATABASE ballast OWNER ballast_owner").execute(&mut admin).await.expect("database");
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("pg").display().to_string()
    }

    pub fn up(&self) {
        let mut opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, self.dir.path().display());
        if let Some(conf) = &self.archive {
            opts.push_str(&format!(" -c wal_level=replica -c archive_mode=on -c archive_command='pgbackrest --config={} --stanza={STANZA} archive-push %p'", conf.display()));
        }
        let log = self.dir.path().join("server.log").display().to_string();
        self.as_pg("pg_ctl", &["-D", &self.data(), "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
    }

    pub fn down(&self) {
        self.as_pg("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// Stops it as a crash would (`immediate`: no checkpoint, no flush of WAL still in its
    /// buffers); `up` then recovers from the WAL on disk.
    pub fn crash(&self) {
        self.as_pg("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    /// Runs `pgbackrest COMMAND…` on this cluster's stanza, as the database's user.
    pub fn pgbackrest(&self, command: &[&str]) -> std::process::Output {
        let conf = self.archive.as_ref().expect("a cluster started archiving").display().to_string();
        let config = format!("--config={conf}");
        let stanza = format!("--stanza={STANZA}");
        let mut args = vec![config.as_str(), stanza.as_str()];
        args.extend_from_slice(command);
        let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut cmd = if root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", "pgbackrest"]);
            c
        } else {
            std::process::Command::new("pgbackrest")
        };
        let out = cmd.args(&args).output().expect("pgbackrest (installed by deploy/dev.sh)");
        assert!(out.status.success(), "pgbackrest {command:?}: {}", String::from_utf8_lossy(&out.stderr));
        out
    }

    /// The settings a fleet member backs this cluster up with, the scratch instance restored
    /// under `scratch`.
    pub fn pgbackrest_env(&self, scratch: &std::path::Path) -> Vec<(&'static str, String)> {
        let conf = self.archive.as_ref().expect("a cluster started archiving").display().to_string();
        vec![("BALLAST_PGBACKREST_STANZA", STANZA.to_owned()), ("BALLAST_PGBACKREST_CONFIG", conf), ("BALLAST_PGBACKREST_SCRATCH_DIR", scratch.display().to_string())]
    }

    /// A directory the database's user may write, removed with the cluster.
    pub fn scratch_dir(&self) -> PathBuf {
        let d = self.dir.path().join("scratch");
        std::fs::create_dir_all(&d).expect("scratch dir");
        let (uid, gid) = id_of("postgres");
        std::os::unix::fs::chown(&d, Some(uid), Some(gid)).expect("chown scratch");
        d
    }

    pub fn url(&self, role: &str) -> String {
        format!("postgres://{role}:{role}@127.0.0.1:{}/ballast", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .args(["-D", &self.data(), "-m", "immediate", "stop"])
            .output();
    }
}

fn id_of(user: &str) -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd.lines().find(|l| l.starts_with(&format!("{user}:"))).expect("the postgres user");
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().expect("uid"), f[3].parse().expect("gid"))
}
