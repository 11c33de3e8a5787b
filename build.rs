//! The job catalogue, the runbooks and the default configuration files are compiled into the
//! binary (src/assets.rs); a change to any of them must rebuild it.
fn main() {
    for path in ["jobs", "runbooks", "policy/plans.toml", "policy/dunning.toml", "policy/slos.toml", "policy/limits.toml", "deploy/loadtest.toml", "deploy/alerts.toml", "templates"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
