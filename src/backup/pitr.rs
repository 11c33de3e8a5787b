//! Physical backups with archived WAL, through pgBackRest (Debian's package): a backup of the
//! stanza the database archives its WAL to, the list of backups, and a restore — to the
//! newest archived WAL or to a chosen time — into a scratch instance listening on its own socket,
//! started from this member and removed after. pgBackRest keeps what its own retention
//! settings say (`repo1-retention-full` in its configuration file): Ballast does not expire.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::BackupError;
use crate::config::backups::Pgbackrest;

/// PostgreSQL refuses to run as root, and pgBackRest's repository belongs to the database's
/// user: a member running as root (a development machine, a test) runs the tools as Debian's
/// `postgres` user.
const DATABASE_OS_USER: &str = "postgres";

/// One backup in the repository.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PhysicalBackup {
    /// pgBackRest's label (`20261205-062728F`).
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// When it started and when it stopped: the earliest time it restores to.
    pub started_at: DateTime<Utc>,
    /// When it stopped.
    pub stopped_at: DateTime<Utc>,
    /// The database's size it holds.
    pub bytes: i64,
    /// What it takes in the repository (compressed, an incremental's own part).
    pub repository_bytes: i64,
}

/// A restored copy running on loopback until `remove`.
#[derive(Debug)]
pub struct ScratchInstance {
    dir: PathBuf,
    bin: PathBuf,
    /// Its port number (its socket's, in its directory; it listens on no TCP port).
    pub port: u16,
}

/// Takes a backup: `incremental` after the newest (pgBackRest makes it full when there is
/// none), otherwise full. The backup it took.
pub async fn backup(cfg: &Pgbackrest, incremental: bool) -> Result<PhysicalBackup, BackupError> {
    let kind = if incremental { "--type=incr" } else { "--type=full" };
    run(cfg, "backup", &[kind.to_owned()]).await?;
    list(cfg).await?.into_iter().next().ok_or_else(|| BackupError::Tool("pgbackrest backup finished but lists no backup".into()))
}

/// The stanza's backups, newest first.
pub async fn list(cfg: &Pgbackrest) -> Result<Vec<PhysicalBackup>, BackupError> {
    Ok(info(cfg).await?.0)
}

/// The stanza's backups, newest first, and the database's major version.
pub async fn info(cfg: &Pgbackrest) -> Result<(Vec<PhysicalBackup>, Option<String>), BackupError> {
    parse_info(&run(cfg, "info", &["--output=json".to_owned()]).await?)
}

/// Reads `pgbackrest info --output=json`: the backups newest first, and the database version.
fn parse_info(json: &str) -> Result<(Vec<PhysicalBackup>, Option<String>), BackupError> {
    let bad = |e: &dyn std::fmt::Display| BackupError::Tool(format!("pgbackrest info: unexpected output ({e})"));
    let stanzas: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e))?;
    let stanza = stanzas.as_array().and_then(|a| a.first()).ok_or_else(|| bad(&"no stanza"))?;
    let time = |v: &serde_json::Value| v.as_i64().and_then(|s| DateTime::from_timestamp(s, 0)).ok_or_else(|| bad(&"a backup without its times"));
    let mut backups = Vec::new();
    for b in stanza["backup"].as_array().into_iter().flatten() {
        if b["error"].as_bool() == Some(true) {
            continue;
        }
        backups.push(PhysicalBackup {
            label: b["label"].as_str().unwrap_or_default().to_owned(),
            kind: b["type"].as_str().unwrap_or_default().to_owned(),
            started_at: time(&b["timestamp"]["start"])?,
            stopped_at: time(&b["timestamp"]["stop"])?,
            bytes: b["info"]["size"].as_i64().unwrap_or(0),
            repository_bytes: b["info"]["repository"]["size"].as_i64().unwrap_or(0),
        });
    }
    backups.reverse();
    let version = stanza["db"].as_array().and_then(|d| d.last()).and_then(|d| d["version"].as_str()).map(str::to_owned);
    Ok((backups, version))
}

/// Restores the stanza into a new scratch directory — to `target` when given, otherwise to
/// the end of the archived WAL — and starts it on a free loopback port, promoted (writable,
/// archiving off so it never writes into the repository). Waits up to `limit` for recovery.
/// `version` is the database's major version (from [`info`]) and `limits` the source's own
/// settings that recovery holds the copy to (see [`HOT_STANDBY_LIMITS`]).
pub async fn restore(cfg: &Pgbackrest, version: Option<&str>, target: Option<DateTime<Utc>>, limits: &[(String, String)], limit: Duration) -> Result<ScratchInstance, BackupError> {
    let bin = server_bin(version)?;
    let root = cfg.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let dir = root.join(format!("ballast-restore-{}", uuid::Uuid::new_v4().simple()));
    let port = free_port()?;
    let instance = ScratchInstance { dir, bin, port };
    match start(cfg, &instance, target, limits, limit).await {
        Ok(()) => Ok(instance),
        Err(e) => {
            // A copy of production's data never stays behind, however the restore failed.
            let _ = instance.remove().await;
            Err(e)
        }
    }
}

/// The settings recovery refuses to run below the source's values (PostgreSQL's "insufficient
/// parameter settings"): a source started with them on its command line or in a
/// configuration file outside its data directory would not pass them to its copy.
pub const HOT_STANDBY_LIMITS: &[&str] = &["max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions", "max_locks_per_transaction"];

async fn start(cfg: &Pgbackrest, instance: &ScratchInstance, target: Option<DateTime<Utc>>, limits: &[(String, String)], limit: Duration) -> Result<(), BackupError> {
    let dir = instance.dir.display().to_string();
    tool("mkdir", &["-m".to_owned(), "0700".to_owned(), dir.clone()]).await?;
    // To the end of the archive, recovery promotes by itself; to a time, it is told to.
    let mut args = vec![format!("--pg1-path={dir}"), "--archive-mode=off".to_owned()];
    if let Some(t) = target {
        args.push("--type=time".to_owned());
        args.push("--target-action=promote".to_owned());
        args.push(format!("--target={}", t.format("%Y-%m-%d %H:%M:%S%.6f+00")));
    }
    run(cfg, "restore", &args).await?;
    // A cluster laid out as Debian's keeps its configuration in /etc: the copy gets defaults,
    // and password sign-in on its socket and loopback only.
    for (file, text) in [("postgresql.conf", ""), ("pg_hba.conf", "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n")] {
        let path = instance.dir.join(file);
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            tokio::fs::write(&path, text).await.map_err(|e| BackupError::Io(path.display().to_string(), e))?;
        }
    }
    let pg_ctl = instance.bin.join("pg_ctl").display().to_string();
    // Its own socket only, no TCP: nothing else on the machine can reach the copy of
    // production's data, and no port can be taken from under it.
    let mut options = format!("-p {} -k {dir} -c listen_addresses='' -c archive_mode=off -c shared_buffers=128MB", instance.port);
    for (name, value) in limits.iter().filter(|(n, v)| HOT_STANDBY_LIMITS.contains(&n.as_str()) && v.chars().all(|c| c.is_ascii_digit())) {
        options.push_str(&format!(" -c {name}={value}"));
    }
    let log = instance.dir.join("restore.log").display().to_string();
    let started = tool(&pg_ctl, &["-D".into(), dir.clone(), "-l".into(), log.clone(), "-w".into(), "-t".into(), limit.as_secs().max(1).to_string(), "-o".into(), options, "start".into()]).await;
    if let Err(e) = started {
        // The server's own reason (FATAL or ERROR lines), else the log's last lines.
        let text = tokio::fs::read_to_string(&log).await.unwrap_or_default();
        let mut lines: Vec<&str> = text.lines().filter(|l| l.contains("FATAL:") || l.contains("ERROR:")).collect();
        if lines.is_empty() {
            lines = text.lines().rev().take(5).collect();
            lines.reverse();
        }
        return Err(BackupError::Tool(format!("{e}; the restored instance's log says: {}", lines.join(" | "))));
    }
    Ok(())
}

impl ScratchInstance {
    /// Connection options for `like` (a URL of the source: its role and database, whose
    /// passwords the copy shares) pointed at this instance.
    pub fn connect_options(&self, like: &secrecy::SecretString) -> Result<sqlx::postgres::PgConnectOptions, BackupError> {
        let opts: sqlx::postgres::PgConnectOptions =
            secrecy::ExposeSecret::expose_secret(like).parse().map_err(|e| BackupError::Tool(format!("a database URL that does not parse: {e}")))?;
        // Its own socket: a source URL naming a socket directory would otherwise win over a host.
        Ok(opts.socket(&self.dir).port(self.port))
    }

    /// Stops the instance and removes its directory.
    pub async fn remove(self) -> Result<(), BackupError> {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let dir = self.dir.display().to_string();
        let _ = tool(&pg_ctl, &["-D".into(), dir.clone(), "-m".into(), "immediate".into(), "-w".into(), "stop".into()]).await;
        match tokio::fs::remove_dir_all(&self.dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackupError::Io(dir, e)),
        }
    }
}

/// `pgbackrest --stanza=… [--config=…] COMMAND ARGS`, its standard output.
async fn run(cfg: &Pgbackrest, command: &str, args: &[String]) -> Result<String, BackupError> {
    let mut all = vec![format!("--stanza={}", cfg.stanza)];
    if let Some(c) = &cfg.config {
        all.push(format!("--config={}", c.display()));
    }
    all.extend(args.iter().cloned());
    all.push(command.to_owned());
    tool("pgbackrest", &all).await
}

/// Runs `program` as the database's user; its standard output, or its standard error as
/// the error.
async fn tool(program: &str, args: &[String]) -> Result<String, BackupError> {
    let mut cmd = if running_as_root() {
        let mut c = tokio::process::Command::new("runuser");
        c.args(["-u", DATABASE_OS_USER, "--", program]);
        c
    } else {
        tokio::process::Command::new(program)
    };
    cmd.args(args).kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = cmd.output().await.map_err(|e| BackupError::Tool(format!("{program} could not start: {e} (install pgBackRest and PostgreSQL's server package)")))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let short = Path::new(program).file_name().map_or(program.to_owned(), |n| n.to_string_lossy().into_owned());
    Err(BackupError::Tool(format!("{short} {} failed ({}): {}", args.last().map_or("", String::as_str), out.status, String::from_utf8_lossy(&out.stderr).trim())))
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// PostgreSQL's server programs for `version` (Debian keeps each major version's apart), or
/// the newest installed, or those on PATH.
fn server_bin(version: Option<&str>) -> Result<PathBuf, BackupError> {
    let debian = Path::new("/usr/lib/postgresql");
    if let Some(v) = version {
        let dir = debian.join(v).join("bin");
        if dir.join("pg_ctl").exists() {
            return Ok(dir);
        }
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("pg_ctl").exists())
        .collect();
    installed.sort();
    if let Some((_, bin)) = installed.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join("pg_ctl").exists()))
        .ok_or_else(|| BackupError::Tool("pg_ctl not found: a point-in-time rehearsal needs PostgreSQL's server package on this member".into()))
}

fn free_port() -> Result<u16, BackupError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| BackupError::Io("127.0.0.1:0".into(), e))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| BackupError::Io("127.0.0.1:0".into(), e))
}
