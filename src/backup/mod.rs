//! Backups and a rehearsed restore: `dump` writes a logical backup (pg_dump, custom format)
//! with its checksum and keeps the newest N; `pitr` takes pgBackRest's physical backups and
//! restores them, to a point in time, into a scratch instance; `rehearsal` restores either
//! and checks the copy against the source. Every run is kept in `backup_runs` (`runs` owns
//! it), which the backup alert reads. An untested backup is a hypothesis.

pub mod dump;
pub mod pitr;
pub mod rehearsal;
pub mod runs;

use secrecy::ExposeSecret;

/// Why a backup or rehearsal could not run.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The setting it needs is not set.
    #[error("{0} is not set")]
    NotConfigured(&'static str),
    /// A file could not be written or read.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// pg_dump or pg_restore failed.
    #[error("{0}")]
    Tool(String),
    /// PostgreSQL.
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
}

/// A PostgreSQL URL split for a client tool: the URL without its password (it goes in the
/// process list) and the password (it goes in `PGPASSWORD`).
pub(crate) fn for_tool(url: &secrecy::SecretString) -> Result<(String, Option<String>), BackupError> {
    let mut parsed = reqwest::Url::parse(url.expose_secret()).map_err(|e| BackupError::Tool(format!("a database URL that does not parse: {e}")))?;
    let password = parsed.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned());
    let _ = parsed.set_password(None);
    Ok((parsed.to_string(), password))
}

/// Runs a PostgreSQL client tool; its stderr is the error when it fails.
pub(crate) async fn run_tool(program: &str, args: &[String], password: Option<&str>) -> Result<(), BackupError> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().await.map_err(|e| BackupError::Tool(format!("{program} could not start: {e} (install PostgreSQL's client tools)")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(BackupError::Tool(format!("{program} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim())))
}
