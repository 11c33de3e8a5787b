//! What the binary carries with it: the job catalogue (jobs/), the runbook pages (runbooks/)
//! and the reviewed policy files of policy/ and the load-test levels of deploy/, compiled in, so `ballast` works from any
//! directory and in a container without the repository. A setting naming a file or folder
//! (`BALLAST_JOBS_DIR`, `BALLAST_PLANS_FILE`, …) replaces the compiled-in copy.

use std::path::{Path, PathBuf};

use include_dir::{Dir, include_dir};

static JOBS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/jobs");
static RUNBOOKS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/runbooks");
static APP_EMAIL_TEMPLATES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates/app_email");

/// One configuration file: the one a setting names, or the copy compiled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigFile {
    /// A file on disk, read when loaded.
    Path(PathBuf),
    /// The repository's file as it was at build time: its repository path and text.
    Builtin(&'static str, &'static str),
}

impl ConfigFile {
    /// The named file when `setting` is set, else the compiled-in `builtin`.
    pub fn or_builtin(setting: Option<&str>, builtin: ConfigFile) -> Self {
        setting.map(|p| ConfigFile::Path(PathBuf::from(p))).unwrap_or(builtin)
    }

    /// Its text.
    pub fn read(&self) -> std::io::Result<String> {
        match self {
            ConfigFile::Path(p) => std::fs::read_to_string(p),
            ConfigFile::Builtin(_, text) => Ok((*text).to_owned()),
        }
    }

    /// How errors name it: the path, or the repository file the binary carries.
    pub fn shown(&self) -> String {
        match self {
            ConfigFile::Path(p) => p.display().to_string(),
            ConfigFile::Builtin(name, _) => format!("{name} (built in)"),
        }
    }
}

impl From<&Path> for ConfigFile {
    fn from(p: &Path) -> Self {
        ConfigFile::Path(p.to_owned())
    }
}

/// The plan catalogue shipped in policy/plans.toml.
pub const PLANS: ConfigFile = ConfigFile::Builtin("policy/plans.toml", include_str!("../policy/plans.toml"));
/// The dunning policy shipped in policy/dunning.toml.
pub const DUNNING: ConfigFile = ConfigFile::Builtin("policy/dunning.toml", include_str!("../policy/dunning.toml"));
/// The SLO definitions shipped in policy/slos.toml.
pub const SLOS: ConfigFile = ConfigFile::Builtin("policy/slos.toml", include_str!("../policy/slos.toml"));
/// The rate-limit policy shipped in policy/limits.toml.
pub const LIMITS: ConfigFile = ConfigFile::Builtin("policy/limits.toml", include_str!("../policy/limits.toml"));
/// The fleet's health alerts shipped in deploy/alerts.toml.
pub const ALERTS: ConfigFile = ConfigFile::Builtin("deploy/alerts.toml", include_str!("../deploy/alerts.toml"));
/// The load-test levels shipped in deploy/loadtest.toml.
pub const LOADTEST: ConfigFile = ConfigFile::Builtin("deploy/loadtest.toml", include_str!("../deploy/loadtest.toml"));

/// A folder of files: the one a setting names, or the copy compiled in.
#[derive(Debug, Clone)]
pub enum ConfigDir {
    /// A folder on disk, read when loaded.
    Path(PathBuf),
    /// The repository's folder as it was at build time.
    Builtin(&'static str, &'static Dir<'static>),
}

/// The job catalogue shipped in jobs/.
pub fn jobs() -> ConfigDir {
    ConfigDir::Builtin("jobs", &JOBS)
}

/// The runbook pages shipped in runbooks/.
pub fn runbooks() -> ConfigDir {
    ConfigDir::Builtin("runbooks", &RUNBOOKS)
}

/// The app email templates shipped in templates/app_email/: what app services may send.
/// Ballast's own (billing, lifecycle) are in templates/email/, compiled into `email::Template`,
/// and no app can send them.
pub fn app_email_templates() -> ConfigDir {
    ConfigDir::Builtin("templates/app_email", &APP_EMAIL_TEMPLATES)
}

impl ConfigDir {
    /// The named folder when `setting` is set, else the compiled-in `builtin`.
    pub fn or_builtin(setting: Option<&str>, builtin: ConfigDir) -> Self {
        setting.map(|p| ConfigDir::Path(PathBuf::from(p))).unwrap_or(builtin)
    }

    /// Its files ending in `.{ext}` (not recursive), sorted by name: each file's path (as
    /// errors name it) and text.
    pub fn files(&self, ext: &str) -> Result<Vec<(PathBuf, String)>, (PathBuf, std::io::Error)> {
        let mut out = Vec::new();
        match self {
            ConfigDir::Path(dir) => {
                for entry in std::fs::read_dir(dir).map_err(|e| (dir.clone(), e))? {
                    let path = entry.map_err(|e| (dir.clone(), e))?.path();
                    if path.is_file() && path.extension().is_some_and(|x| x == ext) {
                        let text = std::fs::read_to_string(&path).map_err(|e| (path.clone(), e))?;
                        out.push((path, text));
                    }
                }
            }
            ConfigDir::Builtin(name, dir) => {
                for file in dir.files() {
                    if file.path().extension().is_some_and(|x| x == ext) {
                        let text = file.contents_utf8().unwrap_or_default().to_owned();
                        out.push((Path::new(name).join(file.path()), text));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// How errors name it.
    pub fn shown(&self) -> String {
        match self {
            ConfigDir::Path(p) => p.display().to_string(),
            ConfigDir::Builtin(name, _) => format!("{name}/ (built in)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_in_folders_hold_the_repository_files() {
        let jobs = jobs().files("toml").expect("jobs");
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/jobs")).expect("jobs/").count();
        assert_eq!(jobs.len(), on_disk);
        assert!(jobs.iter().any(|(p, t)| p.ends_with("noop.toml") && t.contains("noop")));
        assert!(runbooks().files("md").expect("runbooks").iter().any(|(p, _)| p.ends_with("site-down.md")));
        assert_eq!(PLANS.read().expect("plans"), std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy/plans.toml")).expect("file"));
    }
}
