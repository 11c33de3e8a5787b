//! A logical backup: `pg_dump --format=custom` of the whole database as the system role (it
//! bypasses row-level security, so every tenant's rows are in it), written beside a `.sha256`
//! of it, then all but the newest N dumps removed. The dump is written to a temporary name and
//! renamed when complete, so a crash never leaves a partial file that looks like a backup.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BackupError;

/// What a backup wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Dump {
    /// The file.
    pub file: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its SHA-256, also in `{file}.sha256`.
    pub sha256: String,
    /// Older dumps removed to keep the newest N.
    pub removed: Vec<PathBuf>,
}

/// Dumps the database at `url` into `dir`, named by `now`, and keeps the newest `keep`.
pub async fn write(url: &secrecy::SecretString, dir: &Path, keep: u32, now: chrono::DateTime<chrono::Utc>) -> Result<Dump, BackupError> {
    tokio::fs::create_dir_all(dir).await.map_err(|e| BackupError::Io(dir.display().to_string(), e))?;
    let name = format!("ballast-{}.dump", now.format("%Y%m%dT%H%M%S%.3fZ"));
    let file = dir.join(&name);
    let partial = dir.join(format!(".{name}.partial"));
    let (dbname, password) = super::for_tool(url)?;
    let args = vec!["--format=custom".to_owned(), "--no-owner".to_owned(), format!("--file={}", partial.display()), format!("--dbname={dbname}")];
    super::run_tool("pg_dump", &args, password.as_deref()).await?;
    let bytes = tokio::fs::read(&partial).await.map_err(|e| BackupError::Io(partial.display().to_string(), e))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let sum = dir.join(format!("{name}.sha256"));
    tokio::fs::write(&sum, format!("{sha256}  {name}\n")).await.map_err(|e| BackupError::Io(sum.display().to_string(), e))?;
    tokio::fs::rename(&partial, &file).await.map_err(|e| BackupError::Io(file.display().to_string(), e))?;
    let removed = prune(dir, keep).await?;
    Ok(Dump { file, bytes: bytes.len() as u64, sha256, removed })
}

/// The dumps in `dir`, newest first (their names sort by time).
pub async fn list(dir: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackupError::Io(dir.display().to_string(), e)),
    };
    let mut dumps = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(|e| BackupError::Io(dir.display().to_string(), e))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("ballast-") && name.ends_with(".dump") {
            dumps.push(entry.path());
        }
    }
    dumps.sort();
    dumps.reverse();
    Ok(dumps)
}

/// Checks `file` against its `.sha256`; the checksum when it matches.
pub async fn verify(file: &Path) -> Result<String, BackupError> {
    let bytes = tokio::fs::read(file).await.map_err(|e| BackupError::Io(file.display().to_string(), e))?;
    let sum_file = checksum_of(file);
    let expected = tokio::fs::read_to_string(&sum_file).await.map_err(|e| BackupError::Io(sum_file.display().to_string(), e))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if expected.split_whitespace().next() != Some(actual.as_str()) {
        return Err(BackupError::Tool(format!("checksum mismatch: {} changed after it was written", file.display())));
    }
    Ok(actual)
}

/// Where `file`'s checksum is kept: beside it, `.sha256` appended.
fn checksum_of(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

async fn prune(dir: &Path, keep: u32) -> Result<Vec<PathBuf>, BackupError> {
    let mut removed = Vec::new();
    for old in list(dir).await?.into_iter().skip(keep.max(1) as usize) {
        tokio::fs::remove_file(&old).await.map_err(|e| BackupError::Io(old.display().to_string(), e))?;
        let _ = tokio::fs::remove_file(checksum_of(&old)).await;
        removed.push(old);
    }
    Ok(removed)
}
