//! The migrations, the job catalogue, the runbooks and the default configuration files are
//! compiled into the binary (src/db/mod.rs, src/assets.rs); a change to any of them must
//! rebuild it. And the release: the git commit the binary is built from (`BALLAST_GIT_COMMIT`
//! when the build has no repository, as an image build has not), shown by `ballast --version`,
//! `/metrics` and every trace.
fn main() {
    // (migrations/: sqlx's `migrate!` embeds the files, but a new one alone does not rebuild
    // the crate that embeds them.)
    for path in ["migrations", "jobs", "runbooks", "policy/plans.toml", "policy/dunning.toml", "policy/slos.toml", "policy/limits.toml", "deploy/loadtest.toml", "deploy/alerts.toml", "templates"] {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-env-changed=BALLAST_GIT_COMMIT");
    // A new commit moves HEAD's branch: rebuild so the binary says which.
    for git in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(git).exists() {
            println!("cargo:rerun-if-changed={git}");
        }
    }
    let commit = std::env::var("BALLAST_GIT_COMMIT").ok().filter(|c| !c.trim().is_empty()).or_else(|| {
        let out = std::process::Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    println!("cargo:rustc-env=RELEASE_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
}
