//! The job catalogue: jobs/*.toml, one file per job kind, with the policy the runtime
//! enforces (queue, concurrency, timeout, attempts, backoff, schedule, runbook).

use crate::assets::ConfigDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use serde::Deserialize;

use crate::newtypes::JobKind;

/// A catalogue that cannot be used. Every variant names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum JobCatalogueError {
    /// The folder could not be read.
    #[error("job catalogue {0}: cannot read folder: {1}")]
    Folder(PathBuf, std::io::Error),
    /// A file could not be read or parsed.
    #[error("{0}: {1}")]
    File(PathBuf, String),
    /// The catalogue names a kind that no handler implements.
    #[error("{0}: unknown job kind {1:?}: no handler is registered for it")]
    UnknownKind(PathBuf, String),
    /// A registered handler has no catalogue entry.
    #[error("{dir}: job kind {kind:?} has a handler but no catalogue entry (add {dir}/{kind}.toml)")]
    MissingEntry {
        /// The catalogue folder.
        dir: PathBuf,
        /// The kind without an entry.
        kind: String,
    },
}

/// Job kinds renamed, old name first. For one release the old name still runs (a job queued
/// before an upgrade, a script naming it) with a deprecation warning; then the entry goes.
/// (`webhooks.backlog`, renamed `stripe.backlog` in 0.2.0, ran under its old name until 0.5.0.)
pub const RENAMED_KINDS: &[(&str, &str)] = &[];

/// The name `kind` has now: itself, or the new name of a renamed kind (logged as deprecated).
pub fn current_kind(kind: &str) -> &str {
    match RENAMED_KINDS.iter().find(|(old, _)| *old == kind) {
        Some((old, new)) => {
            tracing::warn!(message = "deprecated job kind: runs under its new name; use that (the old one goes next release)", old, new);
            new
        }
        None => kind,
    }
}

/// Exponential backoff with jitter between attempts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backoff {
    /// Delay before the second attempt.
    pub base_secs: f64,
    /// Upper bound of any delay.
    pub max_secs: f64,
    /// Spread, as a fraction of the delay (0.2 → ±20 %), so retries of a burst do not align.
    #[serde(default = "default_jitter")]
    pub jitter: f64,
}

fn default_jitter() -> f64 {
    0.2
}

impl Backoff {
    /// The delay before attempt `next_attempt` (2 for the first retry), jittered.
    pub fn delay(&self, next_attempt: u32) -> Duration {
        let exp = next_attempt.saturating_sub(2).min(30) as i32;
        let raw = (self.base_secs * 2f64.powi(exp)).min(self.max_secs);
        let spread = if self.jitter > 0.0 { rand::rng().random_range(-self.jitter..=self.jitter) } else { 0.0 };
        Duration::from_secs_f64((raw * (1.0 + spread)).max(0.0))
    }
}

/// One catalogue entry as written in its file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    kind: String,
    description: String,
    queue: Option<String>,
    concurrency: usize,
    timeout_secs: f64,
    max_attempts: u32,
    backoff: Backoff,
    schedule: Option<String>,
    #[serde(default)]
    schedule_payload: Option<toml::Table>,
    runbook: Option<String>,
    #[serde(default)]
    intake: bool,
    #[serde(default)]
    max_payload_bytes: Option<usize>,
}

/// The policy of one job kind, validated.
#[derive(Debug, Clone)]
pub struct JobPolicy {
    /// The job kind.
    pub kind: JobKind,
    /// What the job is for, one sentence.
    pub description: String,
    /// Queue name (defaults to the kind); one queue per kind.
    pub queue: String,
    /// Jobs of this kind one fleet member runs at once.
    pub concurrency: usize,
    /// A run longer than this is cancelled and counts as a failed attempt.
    pub timeout: Duration,
    /// Attempts before the job is dead-lettered.
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
    /// Cron schedule (with seconds: `sec min hour day month weekday`), if the job is periodic.
    pub schedule: Option<cron::Schedule>,
    /// Payload of each scheduled tick.
    pub schedule_payload: serde_json::Value,
    /// The runbook page this job backs, if it is an admin job.
    pub runbook: Option<String>,
    /// App services may queue it through `POST /v1/jobs` (key scope jobs:write).
    pub intake: bool,
    /// Largest payload accepted at intake, as JSON text (`max_payload_bytes`, default
    /// [`DEFAULT_MAX_PAYLOAD_BYTES`]).
    pub max_payload_bytes: usize,
    /// The file the entry came from.
    pub file: PathBuf,
}

/// A job payload's size limit at intake when the entry names none: a job carries ids and
/// small arguments, never documents (it is stored again with every retry and dead letter).
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// All job policies, by kind.
#[derive(Debug, Clone, Default)]
pub struct JobCatalogue {
    dir: PathBuf,
    entries: BTreeMap<JobKind, JobPolicy>,
}

impl JobCatalogue {
    /// Loads and validates every `*.toml` file of `dir`.
    pub fn load(dir: &ConfigDir) -> Result<Self, JobCatalogueError> {
        let files = dir.files("toml").map_err(|(path, e)| JobCatalogueError::Folder(path, e))?;
        let mut entries = BTreeMap::new();
        let mut queues = BTreeMap::new();
        for (file, text) in files {
            let policy = parse_entry(&file, &text)?;
            if let Some(other) = queues.insert(policy.queue.clone(), policy.file.clone()) {
                return Err(JobCatalogueError::File(file, format!("queue {:?} is already used by {}", policy.queue, other.display())));
            }
            if entries.contains_key(&policy.kind) {
                return Err(JobCatalogueError::File(file, format!("job kind {:?} has two entries", policy.kind.as_str())));
            }
            entries.insert(policy.kind.clone(), policy);
        }
        Ok(Self { dir: PathBuf::from(dir.shown()), entries })
    }

    /// Checks that the catalogue and the registered handlers name the same kinds.
    pub fn check_against(&self, handled: &[&str]) -> Result<(), JobCatalogueError> {
        for policy in self.entries.values() {
            if !handled.contains(&policy.kind.as_str()) {
                return Err(JobCatalogueError::UnknownKind(policy.file.clone(), policy.kind.0.clone()));
            }
        }
        for kind in handled {
            if !self.entries.contains_key(&JobKind::from(*kind)) {
                return Err(JobCatalogueError::MissingEntry { dir: self.dir.clone(), kind: (*kind).to_owned() });
            }
        }
        Ok(())
    }

    /// Checks each scheduled kind's `schedule_payload` with `parses` (the kind's handler's
    /// argument check), so a cron tick the handler cannot read stops start-up, naming the file,
    /// instead of dead-lettering at every tick.
    pub fn check_schedule_payloads(&self, parses: impl Fn(&str, &serde_json::Value) -> Result<(), String>) -> Result<(), JobCatalogueError> {
        for policy in self.entries.values().filter(|p| p.schedule.is_some()) {
            parses(policy.kind.as_str(), &policy.schedule_payload)
                .map_err(|e| JobCatalogueError::File(policy.file.clone(), format!("schedule_payload does not fit the handler's arguments: {e}")))?;
        }
        Ok(())
    }

    /// The policy of `kind` (or of the kind it was renamed to), if catalogued.
    pub fn get(&self, kind: &str) -> Option<&JobPolicy> {
        self.entries.get(&JobKind::from(current_kind(kind)))
    }

    /// This catalogue cut down to one kind with another concurrency (the benchmark's setup).
    pub fn only_with_concurrency(mut self, kind: &str, concurrency: usize) -> Self {
        self.entries.retain(|k, _| k.as_str() == kind);
        for policy in self.entries.values_mut() {
            policy.concurrency = concurrency.max(1);
        }
        self
    }

    /// Every policy, ordered by kind.
    pub fn iter(&self) -> impl Iterator<Item = &JobPolicy> {
        self.entries.values()
    }
}

fn parse_entry(file: &Path, text: &str) -> Result<JobPolicy, JobCatalogueError> {
    let fail = |msg: String| JobCatalogueError::File(file.to_owned(), msg);
    let entry: EntryFile = toml::from_str(text).map_err(|e| fail(e.message().to_owned()))?;
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if stem != entry.kind {
        return Err(fail(format!("file name must be the kind: {:?}.toml", entry.kind)));
    }
    if entry.kind.is_empty() || !entry.kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_') {
        return Err(fail(format!("kind {:?}: use lowercase letters, digits, '.' and '_'", entry.kind)));
    }
    if entry.concurrency == 0 || entry.concurrency > 10_000 {
        return Err(fail("concurrency must be between 1 and 10000".into()));
    }
    if !(entry.timeout_secs > 0.0 && entry.timeout_secs.is_finite()) {
        return Err(fail("timeout_secs must be a positive number".into()));
    }
    if entry.max_attempts == 0 {
        return Err(fail("max_attempts must be at least 1".into()));
    }
    let b = &entry.backoff;
    if !(b.base_secs >= 0.0 && b.max_secs >= b.base_secs && (0.0..1.0).contains(&b.jitter)) {
        return Err(fail("backoff needs 0 <= base_secs <= max_secs and 0 <= jitter < 1".into()));
    }
    if entry.max_payload_bytes.is_some_and(|n| n == 0 || n > 1024 * 1024) {
        return Err(fail("max_payload_bytes must be between 1 and 1048576".into()));
    }
    let schedule = match &entry.schedule {
        None => None,
        Some(expr) => Some(cron::Schedule::from_str(expr).map_err(|e| fail(format!("bad cron expression {expr:?}: {e}")))?),
    };
    let schedule_payload = match entry.schedule_payload {
        None => serde_json::json!({}),
        Some(table) => serde_json::to_value(table).map_err(|e| fail(format!("schedule_payload: {e}")))?,
    };
    Ok(JobPolicy {
        kind: JobKind(entry.kind.clone()),
        description: entry.description,
        queue: entry.queue.unwrap_or(entry.kind),
        concurrency: entry.concurrency,
        timeout: Duration::from_secs_f64(entry.timeout_secs),
        max_attempts: entry.max_attempts,
        backoff: entry.backoff,
        schedule,
        schedule_payload,
        runbook: entry.runbook,
        intake: entry.intake,
        max_payload_bytes: entry.max_payload_bytes.unwrap_or(DEFAULT_MAX_PAYLOAD_BYTES),
        file: file.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).expect("write");
    }

    const GOOD: &str = r#"
kind = "noop"
description = "does nothing"
concurrency = 10
timeout_secs = 5
max_attempts = 3
backoff = { base_secs = 1, max_secs = 60 }
"#;

    #[test]
    fn loads_and_checks_handlers() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "noop.toml", GOOD);
        let cat = JobCatalogue::load(&ConfigDir::Path(dir.path().to_owned())).expect("valid");
        assert_eq!(cat.get("noop").map(|p| p.max_attempts), Some(3));
        cat.check_against(&["noop"]).expect("matches");
        let err = cat.check_against(&["noop", "email.send"]).unwrap_err().to_string();
        assert!(err.contains("email.send"), "{err}");
        let err = cat.check_against(&[]).unwrap_err().to_string();
        assert!(err.contains("noop.toml") && err.contains("unknown job kind"), "{err}");
    }

    #[test]
    fn a_renamed_kind_finds_the_policy_of_its_new_name() {
        let repo = ConfigDir::Path(Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs"));
        let cat = JobCatalogue::load(&repo).expect("jobs/");
        for (old, new) in RENAMED_KINDS {
            assert!(!cat.entries.contains_key(&JobKind::from(*old)), "{old} is renamed: its file goes");
            let policy = cat.get(old).unwrap_or_else(|| panic!("{old} finds {new}'s policy"));
            assert_eq!(policy.kind.as_str(), *new);
        }
        assert_eq!(current_kind("stripe.event"), "stripe.event");
    }

    #[test]
    fn bad_cron_names_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        write(dir.path(), "noop.toml", &format!("{GOOD}schedule = \"every tuesday\"\n"));
        let err = JobCatalogue::load(&ConfigDir::Path(dir.path().to_owned())).unwrap_err().to_string();
        assert!(err.contains("noop.toml") && err.contains("bad cron expression"), "{err}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff { base_secs: 2.0, max_secs: 10.0, jitter: 0.0 };
        assert_eq!(b.delay(2), Duration::from_secs(2));
        assert_eq!(b.delay(3), Duration::from_secs(4));
        assert_eq!(b.delay(9), Duration::from_secs(10));
        let j = Backoff { base_secs: 10.0, max_secs: 100.0, jitter: 0.5 };
        for _ in 0..100 {
            let d = j.delay(2).as_secs_f64();
            assert!((5.0..=15.0).contains(&d), "{d}");
        }
    }
}
